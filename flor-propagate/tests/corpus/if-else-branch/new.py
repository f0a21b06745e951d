import flordb as flor
from model import model, evaluate, train_epoch

best = 0.0
for epoch in flor.loop("epoch", range(flor.arg("epochs", 50))):
    train_epoch(model)
    acc = evaluate(model)
    if acc > best:
        best = acc
        model.save("best.pt")
    else:
        patience = epoch - model.best_epoch
        flor.log("patience", patience)
        if patience > 5:
            break
