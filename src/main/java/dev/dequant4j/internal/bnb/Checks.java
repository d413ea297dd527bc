package dev.dequant4j.internal.bnb;

final class Checks {
    private Checks() {}

    static void range(LogicalTensor t, long start, int count) {
        if (start < 0 || count < 0 || start > t.numel() - count) {
            throw new IndexOutOfBoundsException(count + " elements at " + start + " outside " + t.name() + " ("
                    + t.numel() + " elements)");
        }
    }
}
