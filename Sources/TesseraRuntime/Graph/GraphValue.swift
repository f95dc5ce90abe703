import Tessera
import TesseraONNX

/// Any value an ONNX graph passes between nodes: a tensor, a sequence of tensors, or an optional
/// that holds nothing. An optional that holds a value is that value (OptionalHasElement is true
/// for it), which is all ONNX can observe of it.
public enum GraphValue: Sendable {
    case tensor(Value)
    /// The tensors, in order, and their element type (which an empty sequence still has).
    case sequence([Value], elementType: DataType)
    case none

    /// What the value is, for messages: "a tensor", "a sequence", "an empty optional".
    var kindDescription: String {
        switch self {
        case .tensor: return "a tensor"
        case .sequence: return "a sequence"
        case .none: return "an empty optional"
        }
    }

    /// A value read from ONNX test data: tensors decoded, an empty sequence typed by the graph.
    public init(_ data: ONNXDataValue, elementType declared: Int32) throws {
        switch data {
        case .tensor(let t): self = .tensor(try Value(t))
        case .none: self = .none
        case .sequence(let tensors):
            let type = tensors.first?.dataType ?? DataType(number: declared) ?? .float
            guard tensors.allSatisfy({ $0.dataType == type }) else {
                throw RuntimeError(.badInput, "the sequence mixes element types; ONNX sequences hold one")
            }
            self = .sequence(try tensors.map { try Value($0) }, elementType: type)
        }
    }

    /// Whether this value may stand where the graph declares `info`.
    func fits(_ info: ONNXGraph.ValueInfo) -> Bool {
        switch (info.kind, self) {
        case (.tensor, .tensor), (.sequence, .sequence), (.optional, _): return true
        default: return false
        }
    }

    /// Tensors rounded to what their types hold (`Value.representable`).
    func representable() -> GraphValue {
        switch self {
        case .tensor(let v): return .tensor(v.representable())
        case .sequence(let items, let type): return .sequence(items.map { $0.representable() }, elementType: type)
        case .none: return self
        }
    }

    /// The tensors this value holds under `name`, as files and comparisons name them: a tensor
    /// as NAME, a sequence's as NAME[0], NAME[1], …, an empty optional none.
    public func tensors(named name: String) -> [(name: String, value: Value)] {
        switch self {
        case .tensor(let v): return [(name, v)]
        case .sequence(let items, _): return items.enumerated().map { ("\(name)[\($0.offset)]", $0.element) }
        case .none: return []
        }
    }

    /// The element type of the tensor or of the sequence's tensors (nil for an empty optional).
    var elementType: DataType? {
        switch self {
        case .tensor(let v): return v.type
        case .sequence(_, let type): return type
        case .none: return nil
        }
    }
}
