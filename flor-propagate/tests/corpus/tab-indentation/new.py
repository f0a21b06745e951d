import flordb as flor
for epoch in flor.loop("epoch", range(3)):
    for i in range(10):
        value = epoch * i
        flor.log("value", value)
