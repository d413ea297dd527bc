package dev.dequant4j.internal.lora;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.dequant4j.Dequant4jException;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;

class MergeStatsTest {
    @Test
    void maxDeltaAndRelativeNorm() {
        MergeStats s = new MergeStats();
        float[] base = {3, 4, 0, 1};
        float[] merged = {3, 4.5f, -2, 1};
        s.accept(0, base, 0, merged, 0, 4);
        assertEquals(4, s.count());
        assertEquals(2.0, s.maxAbsDelta());
        assertEquals(Math.sqrt(0.25 + 4), s.deltaNorm(), 1e-15);
        assertEquals(Math.sqrt(26), s.baseNorm(), 1e-15);
        assertEquals(Math.sqrt(4.25) / Math.sqrt(26), s.relativeDelta(), 1e-15);
        assertEquals(0, s.nonFinite());
        s.requireFinite(Path.of("x"), "t");
    }

    @Test
    void chunksCombineLikeOneRun() {
        float[] base = new float[100];
        float[] merged = new float[100];
        for (int i = 0; i < 100; i++) {
            base[i] = (float) Math.sin(i);
            merged[i] = base[i] + (float) (0.01 * Math.cos(3 * i));
        }
        MergeStats whole = new MergeStats();
        whole.accept(0, base, 0, merged, 0, 100);
        MergeStats a = new MergeStats();
        MergeStats b = new MergeStats();
        a.accept(0, base, 0, merged, 0, 37);
        b.accept(37, base, 37, merged, 37, 63);
        a.add(b);
        assertEquals(whole.count(), a.count());
        assertEquals(whole.maxAbsDelta(), a.maxAbsDelta());
        assertEquals(whole.relativeDelta(), a.relativeDelta(), 1e-14);
    }

    @Test
    void nonFiniteValuesFailTheMergeWithTheTensorName() {
        MergeStats s = new MergeStats();
        s.accept(10, new float[] {1, 1, 1}, 0, new float[] {1, Float.NaN, Float.POSITIVE_INFINITY}, 0, 3);
        MergeStats earlier = new MergeStats();
        earlier.accept(4, new float[] {0}, 0, new float[] {Float.NEGATIVE_INFINITY}, 0, 1);
        s.add(earlier);
        assertEquals(3, s.nonFinite());
        assertEquals(4, s.firstNonFinite());
        assertEquals(0.0, s.maxAbsDelta());
        Dequant4jException e = assertThrows(Dequant4jException.class,
                () -> s.requireFinite(Path.of("adapter_model.safetensors"), "model.layers.0.q_proj.weight"));
        assertEquals("adapter_model.safetensors: tensor 'model.layers.0.q_proj.weight': merging gives 3 non-finite"
                + " values (first at flat index 4); the adapter seems to be broken", e.getMessage());
    }

    @Test
    void nonFiniteValuesInsideUnrolledGroupsAreCountedAndLeftOutOfTheSums() {
        float[] base = {1, 2, 3, 4, 5, 6, 7, 8, 9};
        float[] merged = {1.5f, 2, 3, 4, 5, Float.NaN, Float.NEGATIVE_INFINITY, 8.25f, 9};
        MergeStats s = new MergeStats();
        s.accept(100, base, 0, merged, 0, 9);
        double baseSq = 0;
        for (float b : base) {
            baseSq += b * b;
        }
        assertEquals(2, s.nonFinite());
        assertEquals(105, s.firstNonFinite());
        assertEquals(0.5, s.maxAbsDelta());
        assertEquals(Math.sqrt(0.25 + 0.0625), s.deltaNorm(), 1e-15);
        assertEquals(Math.sqrt(baseSq), s.baseNorm(), 1e-15);
    }

    @Test
    void relativeDeltaOfZeroBase() {
        MergeStats s = new MergeStats();
        s.accept(0, new float[] {0, 0}, 0, new float[] {0, 0}, 0, 2);
        assertEquals(0.0, s.relativeDelta());
        s.accept(2, new float[] {0}, 0, new float[] {1}, 0, 1);
        assertTrue(Double.isInfinite(s.relativeDelta()));
    }
}
