import flordb as flor
import numpy as np

from data import batches
from model import MLP


def validate(net):
    p = net.forward(np.load("val_x.npy"))
    t = np.load("val_y.npy")
    hits = (p.argmax(axis=1) == t).sum()
    flor.log("val_hits", int(hits))
    return hits / len(t)


net = MLP(784, 10)
for epoch in flor.loop("epoch", range(flor.arg("epochs", 4))):
    for xb, yb in batches(64):
        probs = net.forward(xb)
        net.backward(probs, yb)
        net.update(lr=0.01)
    flor.log("val_acc", validate(net))
