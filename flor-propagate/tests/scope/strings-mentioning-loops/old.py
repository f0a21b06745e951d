"""Train (old)."""
import flordb as flor
data = load()
for epoch in flor.loop("epoch", range(3)):
    print("with flor.iteration('x', 1):")
