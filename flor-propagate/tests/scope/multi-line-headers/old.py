import flordb as flor

net = build()
for epoch in flor.loop("epoch", range(epochs)):
    for batch in flor.loop(
        "step", loader
    ):
        loss = train(net, batch)
    acc = evaluate(net)
