package dev.dequant4j.internal.export;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import org.junit.jupiter.api.Test;

/** Sizes as transformers' convert_file_size_to_int reads them. */
class SizesTest {
    @Test
    void decimalAndBinarySuffixes() {
        assertEquals(300_000, Sizes.parse("300KB"));
        assertEquals(5_000_000_000L, Sizes.parse("5GB"));
        assertEquals(5_000_000_000L, Sizes.parse("5gb"));
        assertEquals(2L << 30, Sizes.parse("2GiB"));
        assertEquals(512L << 20, Sizes.parse("512MiB"));
        assertEquals(1_500_000_000L, Sizes.parse("1.5GB"));
        assertEquals(4096, Sizes.parse("4096"));
        assertEquals(100, Sizes.parse("100B"));
    }

    @Test
    void garbageAndNonPositiveSizesAreUsageErrors() {
        for (String s : new String[] {"", "GB", "five GB", "-1GB", "0", "1e30GB", "NaN"}) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Sizes.parse(s), s);
            assertEquals(true, e.getMessage().contains("'" + s + "'"), e.getMessage());
        }
    }
}
