from relucut.cli.app import main

main()
