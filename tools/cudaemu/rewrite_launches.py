#!/usr/bin/env python3
"""Rewrites a .cu file's kernel launches for the CUDA emulator build (tools/cudaemu).

    kernel<T, N><<<grid, block, smem, stream>>>(a, b, c);
becomes
    ::cudaemu::launch([&] { kernel<T, N>(a, b, c); }, grid, block, smem, stream);

Everything else is copied unchanged, newlines included, and a #line directive keeps __FILE__ and the
line numbers of diagnostics those of the original file.

usage: rewrite_launches.py IN.cu OUT.cpp [NAME-IN-#line]
"""
import os
import sys


def kernel_start(src: str, end: int) -> int:
    """Start of the kernel expression that ends just before src[end] ('<<<')."""
    i = end
    while i > 0 and src[i - 1].isspace():
        i -= 1
    if src[i - 1] == ">":  # template arguments: walk back to the matching '<'
        depth = 0
        while True:
            i -= 1
            c = src[i]
            if c in ">)":
                depth += 1
            elif c in "<(":
                depth -= 1
                if depth == 0:
                    break
    while i > 0 and (src[i - 1].isalnum() or src[i - 1] in "_:"):
        i -= 1
    return i


def balanced(src: str, start: int, open_c: str, close_c: str) -> int:
    """Index just past the bracket group that opens at src[start]."""
    assert src[start] == open_c, f"expected {open_c!r} at offset {start}"
    depth = 0
    i = start
    while True:
        c = src[i]
        if c == open_c:
            depth += 1
        elif c == close_c:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1


def rewrite(src: str) -> tuple[str, int]:
    out, pos, count = [], 0, 0
    while True:
        lt = src.find("<<<", pos)
        if lt < 0:
            out.append(src[pos:])
            return "".join(out), count
        gt = src.find(">>>", lt)
        k0 = kernel_start(src, lt)
        kernel = src[k0:lt]
        config = src[lt + 3:gt]
        a0 = gt + 3
        while src[a0].isspace():
            a0 += 1
        a1 = balanced(src, a0, "(", ")")
        args = src[a0:a1]
        out.append(src[pos:k0])
        # Every character of the launch but the brackets is kept (newlines included), so lines stay put.
        out.append(f"::cudaemu::launch([&] {{ {kernel}{src[gt + 3:a0]}{args}; }}, {config})")
        pos = a1
        count += 1


def main() -> int:
    src_path, out_path = sys.argv[1], sys.argv[2]
    name = sys.argv[3] if len(sys.argv) > 3 else src_path
    with open(src_path, encoding="utf-8") as f:
        src = f.read()
    text, _ = rewrite(src)
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with open(out_path, "w", encoding="utf-8") as f:
        f.write(f'#line 1 "{name}"\n')
        f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
