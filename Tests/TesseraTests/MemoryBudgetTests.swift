import Glibc
import Testing
@testable import Tessera

/// The budget itself; what it refuses (bombs, hostile graphs) is tested through the CLI in
/// Tests/python/test_attacks.py. Tests never change the process-wide budget: they run in parallel.
@Suite struct MemoryBudgetTests {
    @Test func sizesParseWithBinaryUnits() {
        #expect(MemoryBudget.parse("512M") == 512 << 20)
        #expect(MemoryBudget.parse("8g") == 8 << 30)
        #expect(MemoryBudget.parse("2TB") == 2 << 40)
        #expect(MemoryBudget.parse("1073741824") == 1 << 30)
        for bad in ["", "0", "-5M", "lots", "1.5G", "99999999999T"] { #expect(MemoryBudget.parse(bad) == nil, "\(bad)") }
    }

    @Test func theDefaultFitsTheMachine() {
        #expect(MemoryBudget.machineDefault >= 1 << 20)
        let physical = Int(sysconf(Int32(_SC_PHYS_PAGES))) * Int(sysconf(Int32(_SC_PAGESIZE)))
        #expect(MemoryBudget.machineDefault <= physical / 2)
    }

    @Test func checksRefuseOverflowAndExcess() throws {
        try MemoryBudget.check(1 << 20, width: 4, "a small tensor")
        #expect { try MemoryBudget.check(Int.max / 2, width: 4, "x") } throws: {
            ($0 as? TessError)?.message.hasPrefix("x would take more than") == true
        }
        #expect { try MemoryBudget.check(MemoryBudget.bytes + 1, "y") } throws: { ($0 as? TessError)?.code == .limitExceeded }
    }
}
