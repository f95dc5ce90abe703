import Dispatch
import Foundation
import Testing
@testable import TesseraRuntime

/// `Threads.split` on the spinning pool: every index runs exactly once, in ranges fixed by the
/// arguments alone, when callers nest splits and when several threads split at once (all but
/// one find the pool busy and run their parts themselves).
@Suite struct ThreadPoolTests {
    /// Counts of visits per index, safe to bump from several threads.
    final class Visits: @unchecked Sendable {
        private let lock = NSLock()
        private var counts: [Int]
        private(set) var ranges: [Range<Int>] = []

        init(_ count: Int) { counts = [Int](repeating: 0, count: count) }

        func visit(_ range: Range<Int>) {
            lock.lock()
            defer { lock.unlock() }
            for i in range { counts[i] += 1 }
            ranges.append(range)
        }

        var all: [Int] { lock.lock(); defer { lock.unlock() }; return counts }
    }

    @Test func everyIndexRunsOnceInFixedRanges() {
        for (count, threads, granularity) in [(0, 2, 1), (1, 2, 1), (7, 2, 1), (100, 2, 8), (100, 3, 16), (1000, 8, 1), (5, 16, 2)] {
            let visits = Visits(count)
            Threads.split(count, threads: threads, granularity: granularity) { visits.visit($0) }
            #expect(visits.all.allSatisfy { $0 == 1 }, "\(count) \(threads) \(granularity)")
            // The ranges are those of the formula, whichever thread ran each.
            let units = (count + granularity - 1) / granularity, parts = max(1, min(threads, units))
            let expected = (0 ..< parts).map { part in
                units * part / parts * granularity ..< min(count, units * (part + 1) / parts * granularity)
            }
            #expect(visits.ranges.sorted { $0.lowerBound < $1.lowerBound } == (parts == 1 ? [0 ..< count] : expected))
        }
    }

    @Test func nestedAndConcurrentSplitsRunEveryIndexOnce() {
        let callers = 4, count = 512
        let visits = (0 ..< callers).map { _ in Visits(count) }
        DispatchQueue.concurrentPerform(iterations: callers) { caller in
            for _ in 0 ..< 50 {
                Threads.split(count / 64, threads: 2) { outer in
                    for block in outer {
                        Threads.split(64, threads: 2, granularity: 8) { inner in
                            visits[caller].visit(block * 64 + inner.lowerBound ..< block * 64 + inner.upperBound)
                        }
                    }
                }
            }
        }
        for caller in 0 ..< callers { #expect(visits[caller].all.allSatisfy { $0 == 50 }, "caller \(caller)") }
    }
}
