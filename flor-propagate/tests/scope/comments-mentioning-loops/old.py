import flordb as flor
data = load()
# for step in flor.loop("step", data):
for epoch in flor.loop("epoch", range(3)):
        # flor.log("x", 1)
    model.fit(data)
