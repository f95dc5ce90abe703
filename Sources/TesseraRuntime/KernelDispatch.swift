import CTesseraKernels
import Foundation

/// The instruction sets the hot float32 kernels have variants for, narrowest first.
public enum InstructionSet: String, CaseIterable, Comparable, Sendable {
    case portable, avx2, avx512

    public static func < (a: Self, b: Self) -> Bool { allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)! }
}

/// Which variant of the hot float32 kernels runs: chosen once, at first use, from the CPU's
/// features (cpuid and xgetbv, read in C), so that any build of Tessera, a plain `swift build`
/// or a package that depends on it, runs the AVX2 or AVX-512 kernels where the CPU has them.
/// `TESSERA_ISA` (portable, avx2 or avx512) asks for a narrower variant (a wider one than the
/// CPU runs is capped). Every variant computes exactly what the portable Swift kernels
/// (`PortableKernels`) compute: the same fused multiply-adds in the same order.
public enum KernelDispatch {
    /// The CPU's features as `tessera_cpu_features` reads them (0 off x86-64), read once.
    static let cpuFeatures = tessera_cpu_features()

    /// The widest variant this CPU runs.
    public static let supported: InstructionSet = {
        if cpuFeatures & Int32(TESSERA_CPU_AVX512) != 0 { return .avx512 }
        if cpuFeatures & Int32(TESSERA_CPU_AVX2_FMA) != 0 { return .avx2 }
        return .portable
    }()

    /// `TESSERA_ISA`, unless unset or empty.
    static var requested: String? { ProcessInfo.processInfo.environment["TESSERA_ISA"].flatMap { $0.isEmpty ? nil : $0 } }

    /// `TESSERA_ISA` when it is set but names no variant (the CLI refuses it).
    public static var environmentProblem: String? {
        guard let value = requested, InstructionSet(rawValue: value) == nil else { return nil }
        return "TESSERA_ISA is '\(value)'; it must be one of \(InstructionSet.allCases.map(\.rawValue).joined(separator: ", "))"
    }

    /// The variant in use.
    public static let selected: InstructionSet = {
        min(requested.flatMap(InstructionSet.init(rawValue:)) ?? supported, supported)
    }()

    /// The C kernels of `selected` (nil: the portable Swift kernels).
    static let kernels: tessera_kernels? = table(for: selected)

    /// The C kernels of `isa`, nil for portable (and anywhere but x86-64). Tests run each
    /// variant the CPU supports against the portable kernels.
    static func table(for isa: InstructionSet) -> tessera_kernels? {
#if arch(x86_64)
        switch isa {
        case .portable: return nil
        case .avx2: return tessera_kernels_avx2
        case .avx512: return tessera_kernels_avx512
        }
#else
        return nil
#endif
    }
}
