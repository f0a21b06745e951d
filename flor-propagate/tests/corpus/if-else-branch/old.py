import flordb as flor
from model import model, evaluate, train_epoch

best_acc = 0.0
for epoch in flor.loop("epoch", range(flor.arg("epochs", 50))):
    train_epoch(model)
    acc = evaluate(model)
    if acc > best_acc:
        best_acc = acc
        model.save("best.pt")
    else:
        patience = epoch - model.best_epoch
        if patience > 10:
            print("early stop")
            break
