from lmeval.cli import main

main()
