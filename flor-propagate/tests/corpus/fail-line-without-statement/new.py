import flordb as flor

for epoch in flor.loop("epoch", range(3)):
    flor.log("epoch", epoch)
