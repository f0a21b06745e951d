import flordb as flor
for epoch in flor.loop("epoch", range(3)):
    for step in flor.loop("step", range(10)):
        loss = step * 2
            # odd comment
    checkpoint()
