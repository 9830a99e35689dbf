from screen import *
conv_configs(sys.argv[1], [("c128", dict(channels=128)), ("c128-k3", dict(channels=128, kernel=3)), ("c128-k7", dict(channels=128, kernel=7)),
                           ("c128-tri1", dict(channels=128, triangle=1.0)), ("c227-p3", dict(channels=227, pool=3))])
