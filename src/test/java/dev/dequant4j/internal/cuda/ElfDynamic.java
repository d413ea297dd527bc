package dev.dequant4j.internal.cuda;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;

/**
 * The dynamic section of a little-endian ELF64 shared library: the libraries it needs and the functions it
 * exports. Enough to check, without binutils, what the packaged natives depend on and provide.
 */
record ElfDynamic(List<String> needed, List<String> exportedFunctions) {
    private static final int SHT_DYNSYM = 11;
    private static final int SHT_DYNAMIC = 6;
    private static final long DT_NEEDED = 1;
    private static final int STT_FUNC = 2;
    private static final int STB_GLOBAL = 1;
    private static final int STV_DEFAULT = 0;

    static ElfDynamic parse(byte[] elf) {
        ByteBuffer b = ByteBuffer.wrap(elf).order(ByteOrder.LITTLE_ENDIAN);
        if (b.getInt(0) != 0x464C457F || elf[4] != 2 || elf[5] != 1) {
            throw new IllegalArgumentException("not a little-endian ELF64 file");
        }
        long shoff = b.getLong(0x28);
        int shentsize = b.getShort(0x3A) & 0xFFFF;
        int shnum = b.getShort(0x3C) & 0xFFFF;
        List<String> needed = new ArrayList<>();
        List<String> functions = new ArrayList<>();
        for (int i = 0; i < shnum; i++) {
            int sh = (int) (shoff + (long) i * shentsize);
            int type = b.getInt(sh + 4);
            if (type != SHT_DYNSYM && type != SHT_DYNAMIC) {
                continue;
            }
            int offset = (int) b.getLong(sh + 0x18);
            int size = (int) b.getLong(sh + 0x20);
            int link = b.getInt(sh + 0x28);
            int entsize = (int) b.getLong(sh + 0x38);
            int strtab = (int) b.getLong((int) (shoff + (long) link * shentsize) + 0x18);
            for (int e = offset; e + entsize <= offset + size; e += entsize) {
                if (type == SHT_DYNAMIC) {
                    if (b.getLong(e) == DT_NEEDED) {
                        needed.add(string(elf, strtab + (int) b.getLong(e + 8)));
                    }
                } else {
                    int info = elf[e + 4];
                    int other = elf[e + 5] & 3;
                    int shndx = b.getShort(e + 6) & 0xFFFF;
                    if ((info & 0xF) == STT_FUNC && (info >> 4) == STB_GLOBAL && other == STV_DEFAULT && shndx != 0) {
                        functions.add(string(elf, strtab + b.getInt(e)));
                    }
                }
            }
        }
        return new ElfDynamic(needed, functions);
    }

    private static String string(byte[] elf, int at) {
        int end = at;
        while (elf[end] != 0) {
            end++;
        }
        return new String(elf, at, end - at, StandardCharsets.US_ASCII);
    }
}
