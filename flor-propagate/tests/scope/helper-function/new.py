import flordb as flor

def helper(x):
    y = x * 2
    flor.log("y", y)
    return y

for epoch in flor.loop("epoch", range(3)):
    def closure(v):
        w = v + 1
        flor.log("w", w)
    closure(helper(epoch))
