import flordb as flor

for epoch in flor.loop("epoch", range(3)):

    # train
    for step in flor.loop("step", range(10)):

        loss = step * 2

        # log it
        flor.log("loss", loss)

    # back at the epoch level
        # a comment indented deeper than the code after it
    flor.log("epoch_loss", loss)
    checkpoint()
