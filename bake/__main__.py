from bake.cli import main

main()
