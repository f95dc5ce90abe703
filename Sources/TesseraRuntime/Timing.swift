import Dispatch

/// Kernel timing for `tessera bench` and the benchmark harness.
public enum Timing {
    /// Best seconds of `body` over `budget` seconds: one warm-up call, then at least three
    /// timed calls and at most `maxRuns`.
    public static func best(budget: Double, maxRuns: Int = 10_000, _ body: () -> Void) -> Double {
        body()
        var fastest = Double.infinity, runs = 0
        let start = DispatchTime.now().uptimeNanoseconds
        while runs < 3 || (Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9 < budget && runs < maxRuns) {
            let t = DispatchTime.now().uptimeNanoseconds
            body()
            fastest = min(fastest, Double(DispatchTime.now().uptimeNanoseconds - t) / 1e9)
            runs += 1
        }
        return fastest
    }
}
