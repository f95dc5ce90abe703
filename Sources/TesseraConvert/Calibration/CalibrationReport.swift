/// What calibration did, stored in the conversion report.
public struct CalibrationReport: Codable, Equatable, Sendable {
    public struct Layer: Codable, Equatable, Sendable {
        public var tensor: String
        public var input: String
        public var rows: Int
        public var method: String
        /// `‖X(Ŵ − W)‖² / ‖XW‖²` on the calibration rows.
        public var relativeError: Double

        public init(tensor: String, input: String, rows: Int, method: String, relativeError: Double) {
            self.tensor = tensor; self.input = input; self.rows = rows; self.method = method; self.relativeError = relativeError
        }

        enum CodingKeys: String, CodingKey {
            case tensor, input, rows, method
            case relativeError = "relative_output_error"
        }
    }

    public var file: String
    public var sha256: String
    public var samples: Int
    public var damp: Double
    public var blockSize: Int
    public var sequential: Bool
    public var layers: [Layer]

    public init(file: String, sha256: String, samples: Int, damp: Double, blockSize: Int, sequential: Bool, layers: [Layer]) {
        self.file = file; self.sha256 = sha256; self.samples = samples; self.damp = damp
        self.blockSize = blockSize; self.sequential = sequential; self.layers = layers
    }

    enum CodingKeys: String, CodingKey {
        case file, sha256, samples, damp, sequential, layers
        case blockSize = "block_size"
    }
}
