from screen import *
import ast
conv_configs(sys.argv[1], [(spec, ast.literal_eval(spec)) for spec in sys.argv[2:]])
