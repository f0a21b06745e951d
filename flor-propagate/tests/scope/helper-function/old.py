import flordb as flor

def helper(x):
    # doubled
    y = x * 2
    return y

for epoch in flor.loop("epoch", range(3)):
    def closure(v):
        w = v + 1
    closure(helper(epoch))
