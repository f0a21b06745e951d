import flordb as flor
crit = make_loss()
for epoch in flor.loop("epoch", range(epochs)):
    for i, (x, y) in enumerate(flor.loop("step", loader)):
        out = model(x)
        flor.log("loss", crit(out, y))
    for a, b in zip(flor.loop("val", val_loader), targets):
        pred = model(a)
        flor.log("val_loss", crit(pred, b))
