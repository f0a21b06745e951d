import flordb as flor
from model import make_optimizer, model

base_lr = flor.arg("lr", 0.1)
optimizer = make_optimizer(model, lr=base_lr)
for epoch in flor.loop("epoch", range(10)):
    model.fit_epoch(optimizer)
    optimizer.lr = base_lr * 0.9 ** epoch
