/// Column-aligned text tables for the commands' human-readable output.
enum TextTable {
    /// One line per row, columns separated by two spaces, `rightAligned` columns padded on the
    /// left; trailing spaces are trimmed.
    static func lines(_ rows: [[String]], rightAligned: Set<Int> = []) -> [String] {
        guard let first = rows.first else { return [] }
        let widths = first.indices.map { c in rows.map { $0[c].count }.max()! }
        return rows.map { row in
            row.enumerated().map { c, s in
                let pad = String(repeating: " ", count: widths[c] - s.count)
                return rightAligned.contains(c) ? pad + s : s + pad
            }.joined(separator: "  ").trimmingCharacters(in: .whitespaces)
        }
    }
}
