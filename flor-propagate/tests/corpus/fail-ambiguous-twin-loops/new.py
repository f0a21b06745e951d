import flordb as flor
from model import model, step

for x in flor.loop("step", range(100)):
    loss = step(model, x)
    flor.log("loss", loss)
