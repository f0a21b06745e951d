import flordb as flor
import numpy as np

params = {"w": np.zeros(10), "b": 0.0}
lr = flor.arg("lr", 0.1)
X, y = np.load("x.npy"), np.load("y.npy")

for epoch in flor.loop("epoch", range(flor.arg("epochs", 20))):
    pred = X @ params["w"] + params["b"]
    err = pred - y
    grad_w = X.T @ err / len(y)
    grad_b = err.mean()
    params["w"] -= lr * grad_w
    params["b"] -= lr * grad_b
    flor.log("w_norm", float(np.linalg.norm(params["w"])))
    flor.log("mse", float((err ** 2).mean()))
