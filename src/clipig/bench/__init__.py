"""Every harness that measures CLIPig: speed (`clipig bench`), the live editor (gui), picture quality judged
by a referee (quality) and the side-by-side comparison with the original (fidelity)."""
