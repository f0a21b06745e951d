import flordb as flor
i = 0
while i < epochs:
    with flor.iteration("epoch", i, None):
        loss = train()
        flor.log("loss", loss)
    i += 1
    flor.log("between", i)
flor.log("end", i)
