import flordb as flor
epochs = flor.loop("epoch", range(3))
for e in epochs:
    z = e + 1
