import flordb as flor
OUTER = "epoch"
for e in flor.loop(OUTER, range(3)):
    for s in flor.loop(f"step_{e}", range(4)):
        v = s * 2
        flor.log("loss", v)
    flor.log("e", e)
