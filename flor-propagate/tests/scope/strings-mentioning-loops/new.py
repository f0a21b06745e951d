import flordb as flor
"""Train.

for epoch in flor.loop("fake", range(3)):
    flor.log("fake", 1)
"""
HELP = 'for step in flor.loop("step", data): flor.log("loss", 0)'
data = load()
flor.log("rows", len(data))
for epoch in flor.loop("epoch", range(3)):
    print("with flor.iteration('x', 1):")
    flor.log("epoch", epoch)
