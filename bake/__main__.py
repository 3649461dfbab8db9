from bake.entry import main

main()
