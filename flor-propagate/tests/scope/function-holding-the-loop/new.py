import flordb as flor

def train(model, epochs):
    flor.log("start", 0)
    for epoch in flor.loop("epoch", range(epochs)):
        for batch in flor.loop("step", loader):
            loss = model.step(batch)
            flor.log("loss", loss)
        flor.log("epoch", epoch)
    flor.log("end", 1)

async def main():
    train(Model(), 3)
