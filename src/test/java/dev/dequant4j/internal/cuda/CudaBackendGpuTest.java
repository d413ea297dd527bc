package dev.dequant4j.internal.cuda;

import static org.bytedeco.cuda.global.cudart.cudaErrorMemoryAllocation;
import static org.bytedeco.cuda.global.cudart.cudaGetLastError;
import static org.bytedeco.cuda.global.cudart.cudaMalloc;
import static org.bytedeco.cuda.global.cudart.cudaMemGetInfo;
import static org.bytedeco.cuda.global.cudart.cudaSuccess;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.dequant4j.Checkpoint;
import dev.dequant4j.DType;
import dev.dequant4j.Dequant4jException;
import dev.dequant4j.Dequant4jException.Kind;
import dev.dequant4j.Fixtures;
import dev.dequant4j.internal.bnb.LogicalTensor;
import dev.dequant4j.internal.lora.MergeOp;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.List;
import org.bytedeco.javacpp.Pointer;
import org.bytedeco.javacpp.SizeTPointer;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;

/** Lifecycle, error paths and memory accounting of the CUDA backend on a real device. */
@Tag("gpu")
@ExtendWith(GpuCondition.class)
class CudaBackendGpuTest {
    private static long freeDeviceBytes() {
        try (SizeTPointer free = new SizeTPointer(1); SizeTPointer total = new SizeTPointer(1)) {
            assertEquals(0, cudaMemGetInfo(free, total));
            return free.get();
        }
    }

    @Test
    void probeDescribesTheDevice() {
        CudaBackend.Availability a = CudaBackend.probe();
        assertTrue(a.usable(), a.reason());
        assertTrue(a.device().startsWith("device 0: "), a.device());
    }

    @Test
    void deviceOutOfRangeIsAReasonAndAnError() {
        String old = System.getProperty(CudaRuntime.DEVICE_PROPERTY);
        System.setProperty(CudaRuntime.DEVICE_PROPERTY, "4096");
        try {
            CudaBackend.Availability a = CudaBackend.probe();
            assertFalse(a.usable());
            assertTrue(a.reason().contains("requested device 4096") && a.reason().contains("out of range"),
                    a.reason());
            Dequant4jException e = assertThrows(Dequant4jException.class, CudaBackend::open);
            assertTrue(e.getMessage().contains("out of range"), e.getMessage());
            System.setProperty(CudaRuntime.DEVICE_PROPERTY, "one");
            assertTrue(CudaBackend.probe().reason().contains("is not a device number"));
        } finally {
            if (old == null) {
                System.clearProperty(CudaRuntime.DEVICE_PROPERTY);
            } else {
                System.setProperty(CudaRuntime.DEVICE_PROPERTY, old);
            }
        }
    }

    @Test
    void argumentsAreRejectedBeforeTheDeviceIsUsed() {
        try (CudaBackend cuda = CudaBackend.open();
             Checkpoint c = Checkpoint.open(Fixtures.checkpoint("llama-h64-nf4-dq"));
             Arena arena = Arena.ofConfined()) {
            LogicalTensor t = Gpu.tensors(c).get("model.layers.0.self_attn.q_proj.weight");
            MemorySegment small = arena.allocate(10);
            Dequant4jException e = assertThrows(Dequant4jException.class,
                    () -> cuda.materialize(t, List.of(), DType.F16, small));
            assertTrue(e.getMessage().contains("destination holds 10 bytes"), e.getMessage());
            MemorySegment dst = arena.allocate(64 * 64 * 2L);
            MergeOp bad = new MergeOp.Lora("x", new float[64 * 4], new float[4 * 63], 4, 1f);
            e = assertThrows(Dequant4jException.class, () -> cuda.materialize(t, List.of(bad), DType.F16, dst));
            assertTrue(e.getMessage().contains("right 252"), e.getMessage());
            assertThrows(Dequant4jException.class, () -> cuda.materialize(t, List.of(), DType.I8, dst));
            assertEquals(0, cuda.deviceBytesInUse(), "nothing was allocated for rejected calls");
        }
    }

    /** A per-row DoRA merge to BF16, then a plain dequant to F32: both buffer shapes a backend must grow to. */
    private static void round(CudaBackend cuda, LogicalTensor t, Arena arena) {
        MergeOp op = new MergeOp.Dora("d", new float[48 * 4], new float[4 * 354], 4, 1f, new float[354], true);
        cuda.materialize(t, List.of(op), DType.BF16, arena.allocate(t.numel() * 2));
        cuda.materialize(t, List.of(), DType.F32, arena.allocate(t.numel() * 4));
    }

    @Test
    void closingFreesEverythingAndRepeatedTensorsDoNotGrow() {
        try (Checkpoint c = Checkpoint.open(Fixtures.checkpoint("llama-h48-fp16-nf4-dq"));
             Arena arena = Arena.ofConfined()) {
            LogicalTensor t = Gpu.tensors(c).get("model.layers.0.mlp.down_proj.weight");
            // The first launches load the modules and reserve the kernels' per-thread stacks: device memory that
            // stays with the context, not with a backend.
            try (CudaBackend warm = CudaBackend.open()) {
                round(warm, t, arena);
            }
            long before = freeDeviceBytes();
            CudaBackend cuda = CudaBackend.open();
            try {
                // Grow-only buffers are sized by the largest call so far: hold them to one whole round.
                round(cuda, t, arena);
                long held = cuda.deviceBytesInUse();
                assertTrue(held > 0 && cuda.pinnedBytesInUse() > 0);
                for (int i = 0; i < 5; i++) {
                    round(cuda, t, arena);
                }
                assertEquals(held, cuda.deviceBytesInUse(), "buffers are reused");
            } finally {
                cuda.close();
            }
            assertEquals(0, cuda.deviceBytesInUse());
            assertEquals(0, cuda.pinnedBytesInUse());
            long after = freeDeviceBytes();
            assertTrue(Math.abs(before - after) < (4L << 20), "free device memory " + before + " before, " + after
                    + " after close");
            assertThrows(IllegalStateException.class, () -> cuda.materialize(null, List.of(), DType.F16, null));
        }
    }

    /**
     * A failed allocation leaves the calling thread's last CUDA error set (as Memory's would when the device is
     * full); the next launch must report its own result, not that stale error.
     */
    @Test
    void aFailedAllocationDoesNotFailTheNextTensor() {
        try (CudaBackend cuda = CudaBackend.open();
             Checkpoint c = Checkpoint.open(Fixtures.checkpoint("llama-h64-nf4-dq"));
             Arena arena = Arena.ofConfined()) {
            LogicalTensor t = Gpu.tensors(c).get("model.layers.0.mlp.down_proj.weight");
            MergeOp op = new MergeOp.Lora("a", new float[(int) t.shape()[0] * 2], new float[2 * (int) t.shape()[1]],
                    2, 1f);
            for (List<MergeOp> ops : List.of(List.<MergeOp>of(), List.of(op))) {
                try (Pointer p = new Pointer()) {
                    assertEquals(cudaErrorMemoryAllocation, cudaMalloc(p, 1L << 52), "a petabyte allocation fails");
                }
                MemorySegment want = Oracle.expected(t, ops, DType.F16, arena);
                MemorySegment got = arena.allocate(want.byteSize(), 16);
                cuda.materialize(t, ops, DType.F16, got);
                Oracle.assertBitsEqual(t.name() + " " + ops, want, got, DType.F16);
            }
            assertEquals(cudaSuccess, cudaGetLastError());
        }
    }

    @Test
    void aFailingSourceLeavesTheBackendUsable() {
        try (CudaBackend cuda = CudaBackend.open(new CudaEngine.Options(2048, false));
             Checkpoint c = Checkpoint.open(Fixtures.checkpoint("llama-h64-nf4-dq"));
             Arena arena = Arena.ofConfined()) {
            LogicalTensor t = Gpu.tensors(c).get("model.layers.0.mlp.down_proj.weight");
            MergeOp.ValuesSource failing = new MergeOp.ValuesSource() {
                @Override
                public long numel() {
                    return t.numel();
                }

                @Override
                public void readF32(long start, float[] dst, int dstOff, int count) {
                    if (start > 4096) {
                        throw new Dequant4jException(Kind.IO, null, t.name(), "replacement read failed");
                    }
                }
            };
            MemorySegment dst = arena.allocate(t.numel() * 2);
            Dequant4jException e = assertThrows(Dequant4jException.class,
                    () -> cuda.materialize(t, List.of(new MergeOp.Replace("m", failing)), DType.F16, dst));
            assertTrue(e.getMessage().contains("replacement read failed"), e.getMessage());
            long held = cuda.deviceBytesInUse();
            MemorySegment want = Oracle.expected(t, List.of(), DType.F16, arena);
            cuda.materialize(t, List.of(), DType.F16, dst);
            Oracle.assertBitsEqual(t.name(), want, dst, DType.F16);
            assertEquals(held, cuda.deviceBytesInUse());
        }
    }
}
