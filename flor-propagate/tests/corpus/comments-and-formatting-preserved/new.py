import flordb as flor
from model import Net, batches

net = Net()
for epoch in flor.loop("epoch", range(10)):
    for xb, yb in batches():
        out = net(xb)
        loss = net.loss(out, yb)
        net.backward(loss)
        flor.log("out_max", out.max())
        net.update()
