from snapws.cli.main import main

main()
