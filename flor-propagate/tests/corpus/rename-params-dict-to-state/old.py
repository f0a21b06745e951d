import flordb as flor
import numpy as np

state = {"w": np.zeros(10), "b": 0.0}
lr = flor.arg("lr", 0.1)
X, y = np.load("x.npy"), np.load("y.npy")

for epoch in flor.loop("epoch", range(flor.arg("epochs", 20))):
    pred = X @ state["w"] + state["b"]
    err = pred - y
    grad_w = X.T @ err / len(y)
    grad_b = err.mean()
    state["w"] -= lr * grad_w
    state["b"] -= lr * grad_b
