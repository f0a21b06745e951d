import flordb as flor
from model import make_optimizer, model

lr = flor.arg("lr", 0.1)
optimizer = make_optimizer(model, lr=lr)
for epoch in flor.loop("epoch", range(10)):
    model.fit_epoch(optimizer)
    optimizer.lr = lr * 0.9 ** epoch
    flor.log("lr", dict(lr=optimizer.lr, base=lr))
