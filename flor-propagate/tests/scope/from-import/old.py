from flordb import log, loop as floop
x = 1
for epoch in floop("epoch", range(3)):
    y = epoch * x
