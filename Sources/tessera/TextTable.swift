/// Column-aligned text tables for the commands' human-readable output.
enum TextTable {
    /// One line per row, columns separated by two spaces, `rightAligned` columns padded on the
    /// left; trailing spaces are trimmed.
    static func lines(_ rows: [[String]], rightAligned: Set<Int> = []) -> [String] {
        guard let first = rows.first else { return [] }
        let rows = rows.map { $0.map(\.terminalSafe) }
        let widths = first.indices.map { c in rows.map { $0[c].count }.max()! }
        return rows.map { row in
            row.enumerated().map { c, s in
                let pad = String(repeating: " ", count: widths[c] - s.count)
                return rightAligned.contains(c) ? pad + s : s + pad
            }.joined(separator: "  ").trimmingCharacters(in: .whitespaces)
        }
    }
}

extension String {
    /// The text with control characters (C0, DEL, C1) written as escapes, so that names read
    /// from files cannot move the cursor, recolour or rewrite a terminal. JSON output keeps the
    /// exact text.
    var terminalSafe: String {
        guard unicodeScalars.contains(where: \.isControl) else { return self }
        var out = ""
        for scalar in unicodeScalars {
            switch scalar {
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.isControl: out += "\\u{" + String(scalar.value, radix: 16) + "}"
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out
    }
}

private extension Unicode.Scalar {
    var isControl: Bool { value < 0x20 || (0x7F ... 0x9F).contains(value) }
}
