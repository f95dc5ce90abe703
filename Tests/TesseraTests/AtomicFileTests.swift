import Foundation
import Glibc
import Testing
@testable import Tessera

/// Every file Tessera writes goes through `AtomicFile` (alone or in an `OutputGroup`): these are
/// the attacks on it, each written as what a user or a racing process would do.
@Suite struct AtomicFileTests {
    @Test(arguments: [true, false])
    func aFileCreatedAtTheDestinationWhileWritingIsNeverReplaced(unnamed: Bool) throws {
        let folder = TemporaryFolder()
        let path = folder.file("out.bin")
        let file = try AtomicFile(path: path, replaceExisting: false, unnamed: unnamed)
        try file.write([1, 2, 3])
        writeBytes([9], path)   // another process wins the race
        #expect { try file.commit() } throws: { ($0 as? TessError)?.message.contains("already exists") == true }
        #expect(readBytes(path) == [9])
        #expect(folder.contents == ["out.bin"])
    }

    @Test func specialFilesAreNeverReplacedEvenWhenForced() throws {
        let folder = TemporaryFolder()
        let fifo = folder.file("pipe")
        #expect(mkfifo(fifo, 0o644) == 0)
        let link = folder.file("link")
        writeBytes([7], folder.file("target"))
        #expect(symlink(folder.file("target"), link) == 0)
        for (path, kind) in [(fifo, "a FIFO"), (link, "a symbolic link"), (folder.path, "a folder"), ("/dev/null", "a character device")] {
            #expect { try AtomicFile(path: path, replaceExisting: true) } throws: {
                ($0 as? TessError)?.message == "exists and is not a regular file (\(kind)); refusing to replace it"
            }
        }
        #expect(readBytes(folder.file("target")) == [7])
    }

    @Test func aFIFOAsAnInputIsRefusedWithoutBlocking() throws {
        let folder = TemporaryFolder()
        let fifo = folder.file("model.tess")
        #expect(mkfifo(fifo, 0o644) == 0)
        #expect { try TessFile.open(fifo) } throws: { ($0 as? TessError)?.message == "is a FIFO, not a regular file" }
    }

    @Test func aGroupPutsAllItsOutputsInPlaceOrNone() throws {
        let folder = TemporaryFolder()
        let group = OutputGroup()
        let first = try group.file(folder.file("a.tess"), replaceExisting: false)
        let second = try group.file(folder.file("b.json"), replaceExisting: false)
        try first.write([1])
        try second.write([2])
        writeBytes([9], folder.file("b.json"))   // the second destination appears meanwhile
        #expect(throws: TessError.self) { try group.commit() }
        #expect(folder.contents == ["b.json"], "a.tess was linked, then removed when b.json failed")
        #expect(readBytes(folder.file("b.json")) == [9])
    }

    @Test func anOutputMayNotBeAnInputOrAnotherOutput() throws {
        let folder = TemporaryFolder()
        writeBytes([1], folder.file("model.onnx"))
        #expect(symlink(folder.file("model.onnx"), folder.file("alias.onnx")) == 0)
        let group = OutputGroup(inputs: [folder.file("alias.onnx")])
        #expect { try group.file(folder.file("model.onnx"), replaceExisting: true) } throws: {
            ($0 as? TessError)?.message.hasPrefix("is an input of this command") == true
        }
        _ = try group.file(folder.file("out.tess"), replaceExisting: false)
        #expect { try group.file(folder.path + "/./out.tess", replaceExisting: false) } throws: {
            ($0 as? TessError)?.message == "is named as two outputs of the same command"
        }
        // An input found while the command runs (external data) is protected too.
        let late = OutputGroup()
        let output = try late.file(folder.file("weights.bin"), replaceExisting: true)
        try output.write([3])
        writeBytes([4], folder.file("weights.bin"))
        late.addInput(folder.file("weights.bin"))
        #expect(throws: TessError.self) { try late.commit() }
        #expect(readBytes(folder.file("weights.bin")) == [4])
    }

    @Test func temporaryFilesOfDeadWritersAreRemoved() throws {
        let folder = TemporaryFolder()
        let dead = folder.file(".out.tess.tmp-\(Int32.max - 1)-abc123")    // no such process
        let alive = folder.file(".out.tess.tmp-\(getpid())-def456")       // this process: kept
        let other = folder.file(".other.tess.tmp-\(Int32.max - 1)-abc123") // another destination: kept
        for p in [dead, alive, other] { writeBytes([0], p) }
        do {
            let abandoned = try AtomicFile(path: folder.file("x.bin"), replaceExisting: false, unnamed: false)
            try abandoned.write([1])
        }
        try TessWriter.write([], to: folder.file("out.tess"))
        #expect(Set(folder.contents) == ["out.tess", ".out.tess.tmp-\(getpid())-def456", ".other.tess.tmp-\(Int32.max - 1)-abc123"])
    }

    @Test(arguments: [true, false])
    func replacingKeepsTheOldFileWholeUntilTheNewOneIsInPlace(unnamed: Bool) throws {
        let folder = TemporaryFolder()
        let path = folder.file("m.tess")
        writeBytes([1, 1], path)
        let file = try AtomicFile(path: path, replaceExisting: true, unnamed: unnamed)
        try file.write([2, 2, 2])
        #expect(readBytes(path) == [1, 1])
        #expect(folder.contents.count == (unnamed ? 1 : 2), "the named fallback shows its temporary file")
        try file.commit()
        #expect(readBytes(path) == [2, 2, 2])
        #expect(folder.contents == ["m.tess"])
    }
}
