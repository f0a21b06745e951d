import flordb as flor
import numpy as np

from data import batches
from model import MLP

net = MLP(784, 10)
for epoch in flor.loop("epoch", range(flor.arg("epochs", 4))):
    for xb, yb in batches(64):
        probs = net.forward(xb)
        net.backward(probs, yb)
        net.update(lr=0.01)
    probs = net.forward(np.load("val_x.npy"))
    labels = np.load("val_y.npy")
    hits = (probs.argmax(axis=1) == labels).sum()
    flor.log("val_hits", int(hits))
    flor.log("val_acc", hits / len(labels))
