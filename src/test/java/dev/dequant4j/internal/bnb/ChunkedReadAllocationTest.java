package dev.dequant4j.internal.bnb;

import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.dequant4j.Checkpoint;
import dev.dequant4j.DType;
import dev.dequant4j.internal.Internals;
import java.lang.management.ManagementFactory;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Path;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Reads in the export's 64 Ki-element chunks allocate nothing per chunk (the stored bytes go through per-thread
 * scratch arrays), and reads longer than a scratch piece, or across the pieces' boundaries, give the same bits.
 */
class ChunkedReadAllocationTest {
    private static final com.sun.management.ThreadMXBean THREADS =
            (com.sun.management.ThreadMXBean) ManagementFactory.getThreadMXBean();
    private static final String NF4 = "model.layers.0.mlp.up_proj.weight";
    private static final long[] SHAPE = {512, 1024};
    private static final int N = 512 * 1024;
    private static final int MAX_PASSES = 2_000;

    @TempDir
    Path tmp;

    @Test
    void chunkedReadsAllocateFarLessThanTheyRead() {
        BnbQuantizer.Quantized q = BnbQuantizer.quantize(BnbQuantizer.weights(SHAPE, 11), SHAPE, "nf4", 64, true);
        CheckpointBuilder b = q.addTo(new CheckpointBuilder(), NF4, DType.U8, "bfloat16", true);
        ByteBuffer halves = ByteBuffer.allocate(2 * N).order(ByteOrder.LITTLE_ENDIAN);
        byte[] int8 = new byte[N];
        new Random(3).nextBytes(int8);
        float[] scb = new float[(int) SHAPE[0]];
        for (int i = 0; i < scb.length; i++) {
            scb[i] = 0.5f + i;
            for (int k = 0; k < SHAPE[1]; k++) {
                halves.putShort(BnbQuantizer.bf16(i - k * 0.001f));
            }
        }
        b.put("model.embed_tokens.weight", DType.BF16, SHAPE, halves.array())
                .put("lin.weight", DType.I8, SHAPE, int8)
                .putFloats("lin.SCB", new long[] {scb.length}, scb)
                .put("lin.weight_format", DType.U8, new long[0], new byte[] {0});
        try (Checkpoint c = Checkpoint.open(b.write(tmp.resolve("m")))) {
            for (String name : new String[] {NF4, "model.embed_tokens.weight", "lin.weight"}) {
                LogicalTensor t = Internals.checkpoint().logical(c).get(name);
                float[] whole = new float[N];
                t.readF32(0, whole, 0, N);
                float[] chunk = new float[1 << 16];
                // Until C2 compiles them, the Vector API kernels allocate for every vector: passes are repeated
                // until one allocates little, which a copy of each chunk's stored bytes never does.
                long least = Long.MAX_VALUE;
                for (int pass = 0; pass < MAX_PASSES && least >= t.storedBytes() / 8; pass++) {
                    long before = THREADS.getCurrentThreadAllocatedBytes();
                    readInChunks(t, chunk);
                    least = Math.min(least, THREADS.getCurrentThreadAllocatedBytes() - before);
                }
                // Per chunk, a copy of its stored bytes allocated 33 KB (NF4) to 128 KB (BF16).
                assertTrue(least < t.storedBytes() / 8, name + ": at least " + least + " bytes allocated per read of "
                        + t.storedBytes() + " stored bytes");
                // a read over several pieces, starting and ending inside a piece and a 4-bit block
                int from = (1 << 16) - 37;
                int count = 3 * (1 << 16) + 101;
                float[] part = new float[count];
                t.readF32(from, part, 0, count);
                SyntheticFourBitTest.assertBits(whole, from, part, name);
                if (name.equals(NF4)) {
                    SyntheticFourBitTest.assertBits(q.expected(), 0, whole, name);
                }
            }
        }
    }

    private static void readInChunks(LogicalTensor t, float[] chunk) {
        for (int s = 0; s < N; s += chunk.length) {
            t.readF32(s, chunk, 0, chunk.length);
        }
    }
}
