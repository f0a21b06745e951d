import flordb as flor

def train(net, epochs):
    for epoch in flor.loop("epoch", range(epochs)):
        for batch in flor.loop("step", loader):
            loss = net.step(batch)
    print("done")

async def main():
    train(Model(), 3)
