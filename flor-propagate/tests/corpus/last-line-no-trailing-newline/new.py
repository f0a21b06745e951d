import flordb as flor
for epoch in flor.loop("epoch", range(3)):
    value = epoch * 2
    flor.log("value", value)
