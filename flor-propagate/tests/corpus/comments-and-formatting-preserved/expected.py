import flordb as flor
from model import Net, batches

# TODO(anna): try a bigger net
net = Net()


for epoch in flor.loop( "epoch", range(10) ):   # ten epochs
    for xb, yb in batches():
        out = net( xb )          # forward
        loss = net.loss(out, yb) # loss

        net.backward(loss)   # backward
        flor.log("out_max", out.max())
        # net.update() used to be here
        net.update()
