#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// The most memory that one allocation sized by a file's contents may take: a decoded buffer,
/// a densified tensor, an executor value. Sizes are checked against it before anything is
/// allocated, so a small hostile file fails with `limitExceeded` instead of exhausting the
/// machine.
///
/// The default is half of what this process can have: the least of physical memory, the
/// address-space limit (`ulimit -v`) and the cgroup's memory limit. Set `bytes` (the CLI's
/// `--max-memory`) to choose another.
public enum MemoryBudget {
    private static let chosen = Atomic<Int>(0)   // 0: the machine's default

    /// The budget in bytes.
    public static var bytes: Int {
        get {
            let value = chosen.load(ordering: .relaxed)
            return value > 0 ? value : machineDefault
        }
        set { chosen.store(max(newValue, 1), ordering: .relaxed) }
    }

    /// Half of the least of physical memory, `RLIMIT_AS` and the cgroup (v2 or v1) limit.
    public static let machineDefault: Int = {
        var available = Int(sysconf(Int32(_SC_PHYS_PAGES))) &* Int(sysconf(Int32(_SC_PAGESIZE)))
        if available <= 0 { available = Int.max }
        var limit = rlimit()
        if getrlimit(__rlimit_resource_t(RLIMIT_AS.rawValue), &limit) == 0, limit.rlim_cur != rlim_t.max {
            available = min(available, Int(clamping: limit.rlim_cur))
        }
        for file in ["/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"] {
            if let text = firstLine(of: file), let value = Int(text), value > 0 { available = min(available, value) }
        }
        return max(available / 2, 1 << 20)
    }()

    /// Throws `limitExceeded` unless `count` elements of `width` bytes fit in the budget.
    public static func check(_ count: Int, width: Int = 1, _ what: @autoclosure () -> String) throws {
        let (size, overflow) = count.multipliedReportingOverflow(by: width)
        guard !overflow, size <= bytes else {
            let amount = overflow ? "more than \(Int.max) bytes" : "\(size) bytes"
            throw TessError(.limitExceeded, "\(what()) would take \(amount), over the memory budget of \(bytes) bytes (raise it with --max-memory)")
        }
    }

    /// Parse a size such as `512M`, `8G` or `1073741824` (K, M, G and T are powers of 1024).
    public static func parse(_ text: String) -> Int? {
        let units: [Character: Int] = ["K": 10, "M": 20, "G": 30, "T": 40]
        var digits = Substring(text.uppercased())
        var shift = 0
        if digits.last == "B" { digits = digits.dropLast() }
        if let last = digits.last, let s = units[last] { shift = s; digits = digits.dropLast() }
        guard let value = Int(digits), value > 0 else { return nil }
        let (size, overflow) = value.multipliedReportingOverflow(by: 1 << shift)
        return overflow ? nil : size
    }

    private static func firstLine(of path: String) -> String? {
        guard let file = fopen(path, "r") else { return nil }
        defer { fclose(file) }
        var buffer = [CChar](repeating: 0, count: 64)
        guard fgets(&buffer, Int32(buffer.count), file) != nil else { return nil }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self).trimmingCharacters(in: "\n ")
    }
}

private extension String {
    func trimmingCharacters(in set: String) -> String {
        String(self.drop { set.contains($0) }.reversed().drop { set.contains($0) }.reversed())
    }
}
