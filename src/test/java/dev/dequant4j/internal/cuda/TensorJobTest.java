package dev.dequant4j.internal.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.dequant4j.Checkpoint;
import dev.dequant4j.DType;
import dev.dequant4j.Dequant4jException;
import dev.dequant4j.Fixtures;
import dev.dequant4j.internal.bnb.LogicalTensor;
import dev.dequant4j.internal.lora.MergeOp;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.constraints.IntRange;
import net.jqwik.api.constraints.LongRange;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/** The host-side checks and chunking of the CUDA backend, which need no GPU. */
class TensorJobTest {
    private static Checkpoint checkpoint;
    /** NF4 [64, 160] (rows cross blocks) and plain BF16 [128, 64] from the fixtures. */
    private static LogicalTensor down;
    private static LogicalTensor embed;

    @BeforeAll
    static void open() {
        checkpoint = Checkpoint.open(Fixtures.checkpoint("llama-h64-nf4-dq"));
        down = Gpu.tensors(checkpoint).get("model.layers.0.mlp.down_proj.weight");
        embed = Gpu.tensors(checkpoint).get("model.embed_tokens.weight");
    }

    @AfterAll
    static void close() {
        checkpoint.close();
    }

    private static MergeOp.Lora lora(long rows, long cols, int r) {
        return new MergeOp.Lora("a", new float[(int) rows * r], new float[r * (int) cols], r, 2f);
    }

    private static String reject(LogicalTensor t, List<MergeOp> ops, DType out, long bytes) {
        return assertThrows(Dequant4jException.class, () -> TensorJob.of(t, ops, out, bytes)).getMessage();
    }

    @Test
    void viewAndSourceOfAQuantizedWeight() {
        TensorJob p = TensorJob.of(down, List.of(lora(64, 160, 8)), DType.F16, 64 * 160 * 2);
        assertEquals(64, p.rows());
        assertEquals(160, p.cols());
        assertEquals(CudaKernels.SRC_4BIT, p.sourceKind());
        assertTrue(p.hasSteps());
        TensorJob plain = TensorJob.of(embed, List.of(), DType.F32, 128 * 64 * 4);
        assertEquals(CudaKernels.SRC_PLAIN, plain.sourceKind());
        assertEquals(DType.BF16, plain.plainDtype());
    }

    @Test
    void badArgumentsNameTheTensorAndWhatIsWrong() {
        String m = reject(down, List.of(), DType.F16, 100);
        assertTrue(m.contains(down.name()) && m.contains("destination holds 100 bytes"), m);
        m = reject(down, List.of(), DType.I8, 64 * 160);
        assertTrue(m.contains("output dtype I8"), m);
        m = reject(down, List.of(lora(64, 159, 8)), DType.F16, 64 * 160 * 2);
        assertTrue(m.contains("right has") || m.contains("right 1272"), m);
        m = reject(down, List.of(new MergeOp.Lora("a", new float[0], new float[0], 0, 1f)), DType.F16, 64 * 160 * 2);
        assertTrue(m.contains("rank 0"), m);
        m = reject(down, List.of(new MergeOp.Dora("d", new float[64 * 2], new float[2 * 160], 2, 1f, new float[64],
                true)), DType.F16, 64 * 160 * 2);
        assertTrue(m.contains("magnitude has 64 values for 160 columns"), m);
        m = reject(down, List.of(new MergeOp.AddScaled("b", new float[5], 1f)), DType.F16, 64 * 160 * 2);
        assertTrue(m.contains("5 values for 10240 elements"), m);
        m = reject(down, List.of(new MergeOp.ReplaceRows("t", new long[] {1, 2}, new float[160])), DType.F16,
                64 * 160 * 2);
        assertTrue(m.contains("160 values for 2 rows of 160"), m);
        m = reject(down, Collections.nCopies(17, lora(64, 160, 1)), DType.F16, 64 * 160 * 2);
        assertTrue(m.contains("at most 16"), m);
        m = reject(down, List.of(new MergeOp.Replace("m", new Values(7))), DType.F16, 64 * 160 * 2);
        assertTrue(m.contains("replacement has 7 values"), m);
    }

    @Test
    void theLastReplaceBecomesTheBase() {
        Values full = new Values(64 * 160);
        MergeOp after = lora(64, 160, 2);
        List<MergeOp> ops = new ArrayList<>(Collections.nCopies(20, lora(64, 160, 1)));
        ops.add(new MergeOp.Replace("m", new Values(64 * 160)));
        ops.add(new MergeOp.Replace("m2", full));
        ops.add(after);
        TensorJob p = TensorJob.of(down, ops, DType.BF16, 64 * 160 * 2);
        assertSame(full, p.replacement());
        assertEquals(List.of(after), p.steps(), "steps before a Replace cannot matter, so 20 of them are fine");
        assertEquals(CudaKernels.SRC_PLAIN, p.sourceKind());
        assertEquals(DType.F32, p.plainDtype());
        assertNull(TensorJob.of(down, List.of(), DType.BF16, 64 * 160 * 2).replacement());
    }

    @Test
    void stagedBytesOfFourBitRangesAtOddOffsets() {
        TensorJob p = TensorJob.of(down, List.of(), DType.F16, 64 * 160 * 2);
        assertEquals(1, p.inBytes(0, 1));
        assertEquals(1, p.inBytes(0, 2));
        assertEquals(2, p.inBytes(1, 2), "elements 1 and 2 are in bytes 0 and 1");
        assertEquals(2, p.inBytes(3, 3), "elements 3..5 are in bytes 1 and 2");
        assertEquals(0, p.inBytes(5, 0));
        assertEquals(5120, p.inBytes(0, 10240));
    }

    /** Chunks cover the tensor exactly, in order: element chunks on vector boundaries, row chunks on rows. */
    @Property(tries = 300)
    void chunksTileTheTensor(@ForAll @LongRange(min = 1, max = 5000) long rows,
                             @ForAll @LongRange(min = 1, max = 3000) long cols,
                             @ForAll @LongRange(min = 1, max = 1L << 22) long budget,
                             @ForAll @IntRange(min = 0, max = 1) int withSteps) {
        // chunks() needs only the view and whether there are steps; no tensor behind it.
        TensorJob p = new TensorJob(null, null, withSteps == 1 ? List.of(lora(rows, cols, 1)) : List.of(), DType.F16,
                rows * cols, rows, cols);
        long next = 0;
        long nextRow = 0;
        for (TensorJob.Chunk c : p.chunks(budget)) {
            assertEquals(next, c.elem0());
            assertTrue(c.count() > 0);
            if (withSteps == 1) {
                assertEquals(nextRow, c.row0());
                assertEquals(c.rows() * cols, c.count());
                assertTrue(c.count() <= Math.max(budget, cols));
                nextRow += c.rows();
            } else {
                assertEquals(0, c.elem0() % TensorJob.ELEMENT_ALIGN);
                assertTrue(c.count() <= Math.max(budget, TensorJob.ELEMENT_ALIGN));
            }
            next += c.count();
        }
        assertEquals(rows * cols, next);
    }

    /** A replacement of n values (never read here). */
    private record Values(long numel) implements MergeOp.ValuesSource {
        @Override
        public void readF32(long start, float[] dst, int dstOff, int count) {
            throw new AssertionError("planning reads no values");
        }
    }
}
