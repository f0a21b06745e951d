import flordb as flor
for epoch in flor.loop("epoch", range(3)):
    acc = epoch / 3
    flor.log("acc", acc)
