import flordb as flor

model = build()
flor.log("params", len(model))
for epoch in flor.loop(
    "epoch",  # the outer loop
    range(epochs),
):
    for batch in flor.loop("step",
                           loader):
        loss = train(model, batch)
        flor.log("loss", loss)
    acc = evaluate(model)
    flor.log("acc", acc)
flor.log("final", acc)
