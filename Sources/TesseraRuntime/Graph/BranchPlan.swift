/// Stretches of a graph whose nodes split into two independent branches, run side by side on two
/// threads (each op on one). Ops split their own work among threads only when it is large, so
/// between the large ops one core idles; branches (a detector's heads, a U-Net's skip paths) fill
/// it. Each branch runs its nodes in graph order and every op computes the same bits on any
/// number of threads, so a plan never changes an output.
struct BranchRegion: Equatable {
    /// The nodes, by index, the region covers: every node of the range is in one branch.
    var nodes: Range<Int>
    /// The two branches' nodes, each in graph order.
    var branches: [[Int]]
}

enum BranchPlan {
    /// The longest stretch of nodes a region is searched over (bounds planning time).
    static let longestRegion = 128

    /// Regions worth running side by side, in graph order and disjoint.
    ///
    /// - `dependencies[i]`: the nodes node `i` reads from (or must run after: a fused chain's
    ///   nodes depend on its first), all below `i`.
    /// - `chains`: the node ranges a fused chain spans (first node ... last absorbed node); a
    ///   region holds a chain whole or not at all.
    /// - `costs[i]`: node `i`'s measured time; a region is kept when running it as two branches
    ///   saves at least `minimumGain` of it (its total less its larger branch).
    ///
    /// Greedy in graph order: from each start, the end with the largest saving; the components of
    /// the stretch (nodes linked by a dependency inside it) are packed into two branches, largest
    /// first, each into the lighter branch.
    static func regions(dependencies: [[Int]], chains: [ClosedRange<Int>], costs: [Double], minimumGain: Double) -> [BranchRegion] {
        let n = costs.count
        var chainEnd = Array(0 ..< n), chainStart = Array(0 ..< n)
        for chain in chains {
            chainEnd[chain.lowerBound] = max(chainEnd[chain.lowerBound], chain.upperBound)
            for i in chain where i != chain.lowerBound { chainStart[i] = min(chainStart[i], chain.lowerBound) }
        }
        var regions: [BranchRegion] = []
        var start = 0
        while start < n {
            var parent: [Int: Int] = [:], weight: [Int: Double] = [:]
            func root(_ i: Int) -> Int {
                var r = i
                while let p = parent[r], p != r { r = p }
                return r
            }
            var best: (gain: Double, branches: [[Int]])?
            var openUntil = start
            for e in start ..< min(n, start + longestRegion) {
                if chainStart[e] < start { break }   // a chain begun before the stretch
                openUntil = max(openUntil, chainEnd[e])
                parent[e] = e
                weight[e] = costs[e]
                for d in dependencies[e] where d >= start {
                    let (a, b) = (root(e), root(d))
                    if a != b { parent[b] = a; weight[a]! += weight.removeValue(forKey: b)! }
                }
                guard openUntil <= e, weight.count > 1 else { continue }
                let (gain, bins) = packed(weight)
                if gain >= (best?.gain ?? .leastNonzeroMagnitude) {   // ties: the longer region
                    var branches: [[Int]] = [[], []]
                    for i in start ... e { branches[bins[root(i)]!].append(i) }
                    best = (gain, branches)
                }
            }
            guard let best, best.gain >= minimumGain else { start += 1; continue }
            let end = best.branches.map { $0.last! }.max()! + 1
            regions.append(BranchRegion(nodes: start ..< end, branches: best.branches))
            start = end
        }
        return regions
    }

    /// Components (root → cost) packed into two branches, largest first into the lighter: the
    /// time saved (total less the heavier branch) and each root's branch.
    private static func packed(_ weight: [Int: Double]) -> (gain: Double, bins: [Int: Int]) {
        var loads = [0.0, 0.0], bins: [Int: Int] = [:]
        for (root, cost) in weight.sorted(by: { ($0.value, $1.key) > ($1.value, $0.key) }) {
            let b = loads[0] <= loads[1] ? 0 : 1
            loads[b] += cost
            bins[root] = b
        }
        return (min(loads[0], loads[1]), bins)
    }
}

/// Where an executor stands in choosing its branch regions. The first run warms up (packs
/// weights, folds constants); the next `samples` time every node; the next `samples` run the
/// planned regions as branches and time each; from then on the regions whose best time beat
/// their nodes' best serial times by `margin` run as branches. Times are the least of the
/// samples, so one run slowed by the machine decides nothing. Calibration runs (an observer)
/// stay serial and do not count.
final class BranchState {
    /// The least time, in seconds, a region must save on paper to be tried (the hand-off to the
    /// second thread and the merge cost a few µs).
    static let minimumGain = 50e-6
    static let samples = 3
    static let margin = 0.95

    private enum Phase {
        case off, warmingUp
        case measuring(runs: Int, costs: [Double])
        case trying(runs: Int, [BranchRegion], serial: [Double], trial: [Double])
        case settled([BranchRegion])
    }
    private var phase: Phase

    init(enabled: Bool) { phase = enabled ? .warmingUp : .off }

    func disable() { phase = .off }

    /// Runs `regions` as branches from the next run on, as a finished plan.
    func settle(_ regions: [BranchRegion]) { phase = .settled(regions) }

    /// The regions the plan kept, once it is finished.
    var settled: [BranchRegion]? { if case .settled(let regions) = phase { regions } else { nil } }

    /// Whether this run times every node for the plan.
    var measuring: Bool { if case .measuring = phase { true } else { false } }

    /// The regions this run takes as branches.
    func regions(observed: Bool) -> [BranchRegion] {
        guard !observed else { return [] }
        switch phase {
        case .trying(_, let regions, _, _), .settled(let regions): return regions
        default: return []
        }
    }

    func timeTrial(_ region: Int, seconds: Double) {
        guard case .trying(let runs, let regions, let serial, var trial) = phase else { return }
        trial[region] = min(trial[region], seconds)
        phase = .trying(runs: runs, regions, serial: serial, trial: trial)
    }

    /// Moves on after a run that finished: `costs` are the node times a measuring run took,
    /// `plan` makes regions from the least of them.
    func finishRun(costs: [Double]?, plan: ([Double]) -> [BranchRegion]) {
        switch phase {
        case .warmingUp: phase = .measuring(runs: 0, costs: [])
        case .measuring(let runs, let least):
            guard let costs else { return }
            let best = least.isEmpty ? costs : zip(least, costs).map { min($0, $1) }
            guard runs + 1 == Self.samples else { phase = .measuring(runs: runs + 1, costs: best); return }
            let regions = plan(best)
            phase = regions.isEmpty ? .settled([]) : .trying(runs: 0, regions, serial: regions.map { best[$0.nodes].reduce(0, +) },
                                                            trial: Array(repeating: .infinity, count: regions.count))
        case .trying(let runs, let regions, let serial, let trial):
            guard runs + 1 == Self.samples else { phase = .trying(runs: runs + 1, regions, serial: serial, trial: trial); return }
            phase = .settled(regions.indices.filter { trial[$0] < Self.margin * serial[$0] }.map { regions[$0] })
        case .off, .settled: break
        }
    }
}
