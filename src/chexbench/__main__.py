from chexbench.cli import main

main()
